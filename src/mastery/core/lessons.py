"""The 44 lessons of the roadmap and where each lab's code lives."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

MODULES = {
    1: "Foundations",
    2: "Computer Vision",
    3: "NLP & LLM Core",
    4: "Vector Databases & RAG",
    5: "Agentic AI",
    6: "Production ML",
    7: "Data Engineering",
    8: "Capstone 1: Research Assistant",  # L30-L32 sit between modules 7 and 8 in the roadmap
    9: "Model Evaluation & Error Analysis",
    10: "ML Security (Offensive)",
    11: "Efficient Training",
    12: "Advanced LLM Security & Fine-Tuning",
    13: "Final Capstone: Cyber-Sentinel",
    14: "Job Prep",
}


@dataclass(frozen=True)
class Lesson:
    id: str
    title: str
    module: int
    slug: str

    @property
    def module_name(self) -> str:
        return MODULES[self.module]

    @property
    def lab_module(self) -> str:
        return f"mastery.labs.{self.id}_{self.slug}"

    @property
    def implemented(self) -> bool:
        return importlib.util.find_spec(self.lab_module) is not None

    @property
    def status(self) -> str:
        return "implemented" if self.implemented else "planned"


_RAW = [
    (1, "Linear algebra with NumPy: dense layer and the loop-vs-vector benchmark", "dense_layer"),
    (1, "Classical ML: Titanic survival, regression and classification", "titanic"),
    (1, "Ensemble methods: house prices, linear baseline vs XGBoost", "house_prices"),
    (1, "Neural networks from scratch: 2-layer NumPy net on moons", "numpy_mlp"),
    (1, "PyTorch fundamentals: MNIST digit classifier", "mnist"),
    (1, "Optimization techniques: the convergence battle", "optimizers"),
    (1, "Regularization: CIFAR-10 MLP, overfit vs Dropout + BatchNorm", "regularization"),
    (1, "MLflow setup and tracking", "mlflow_tracking"),
    (2, "CNN fundamentals: convolution from scratch, CIFAR-10 CNN", "cnn"),
    (2, "Modern CNN architectures: transfer learning for malware screenshots", "transfer"),
    (2, "Object detection: YOLOv8 hard-hat detector", "detection"),
    (2, "Image segmentation: U-Net for nuclei", "unet"),
    (3, "Text processing and embeddings: BPE, word2vec, semantic classifier", "embeddings"),
    (3, "Sequence models: character-level LSTM on Shakespeare", "lstm"),
    (3, "Transformer architecture: a mini transformer that reverses strings", "transformer"),
    (3, "BERT and fine-tuning: IMDb sentiment", "bert"),
    (4, "Vector search fundamentals: exact search and IVF vs FAISS", "vector_search"),
    (4, "Vector databases: knowledge-base ingestion into Chroma", "kb_ingest"),
    (4, "RAG implementation: chat with docs", "rag"),
    (4, "RAG optimization: hybrid search and re-ranking", "rag_eval"),
    (5, "Agent fundamentals: a ReAct scratchpad agent", "react_agent"),
    (5, "Agent workflows: LangGraph support-bot router", "agent_workflow"),
    (5, "Multi-agent systems: a research crew", "crew"),
    (5, "Production agents: a resilient agent API", "agent_api"),
    (6, "FastAPI and serving: a prediction endpoint", "predict_api"),
    (6, "Containerization: full-stack compose", "containers"),
    (6, "CI/CD for ML: an automated pipeline", "cicd"),
    (7, "Data pipelines and DVC: versioning data", "dvc"),
    (7, "Data quality and validation: the break-fix pipeline", "data_quality"),
    (8, "Research Assistant: backend and orchestration", "assistant_backend"),
    (8, "Research Assistant: frontend and integration", "assistant_ui"),
    (8, "Research Assistant: monitoring and polish", "assistant_monitoring"),
    (9, "Systematic error analysis: failure analysis of the best model", "error_analysis"),
    (10, "Adversarial ML: red-teaming the assistant", "red_team"),
    (11, "Hardware stress test: memory and quantization", "hardware"),
    (11, "Fine-tuning setup: LoRA on an instruction subset", "lora"),
    (11, "Export and GGUF: run the fine-tuned model on CPU", "gguf_export"),
    (12, "LLM guardrails: a secured RAG", "guardrails"),
    (12, "Advanced fine-tuning: a security specialist model", "security_finetune"),
    (13, "The fuzzy logic core: a risk engine", "fuzzy_risk"),
    (13, "The modules: vision, log anomalies, threat intel", "sentinel_modules"),
    (13, "Full integration: the Cyber-Sentinel platform", "sentinel_platform"),
    (14, "Portfolio and write-up", "portfolio"),
    (14, "Mock interviews: system design and theory", "interviews"),
]

LESSONS: list[Lesson] = [
    Lesson(id=f"l{i:02d}", title=title, module=module, slug=slug)
    for i, (module, title, slug) in enumerate(_RAW, start=1)
]
_BY_ID = {lesson.id: lesson for lesson in LESSONS}


def normalise_id(lab_id: str) -> str:
    """Accept 'l5', 'L05', '5' or 'l05' and return 'l05'."""
    text = lab_id.strip().lower().lstrip("l")
    if text.isdigit():
        return f"l{int(text):02d}"
    return lab_id.strip().lower()


def get_lesson(lab_id: str) -> Lesson:
    from mastery.core.errors import LabNotFound

    key = normalise_id(lab_id)
    if key not in _BY_ID:
        raise LabNotFound(f"unknown lab '{lab_id}'; lab ids run from l01 to l44 (see 'mastery labs list')")
    return _BY_ID[key]
