"""The Titanic model as a DVC pipeline: prepare -> train -> evaluate, each stage a command DVC runs.

`python -m mastery.ops.dvc_pipeline STAGE` runs one stage in the current folder (a DVC repository holding
params.yaml and data/titanic.csv); `write_pipeline` writes the dvc.yaml that wires them together. The model
is L2's logistic-regression pipeline (mastery.tabular.titanic), saved with skops (no pickle).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DATA = "data/titanic.csv"
PREPARED = "data/prepared"
MODEL = "model"
METRICS = "metrics.json"

# What `dvc repro` hashes for each stage: a parameter change reruns only the stages that read it.
PIPELINE: dict[str, Any] = {
    "stages": {
        "prepare": {
            "cmd": "python -m mastery.ops.dvc_pipeline prepare",
            "deps": [DATA],
            "params": ["prepare.test_size", "prepare.seed"],
            "outs": [PREPARED],
        },
        "train": {
            "cmd": "python -m mastery.ops.dvc_pipeline train",
            "deps": [f"{PREPARED}/train.csv"],
            "params": ["train.C", "train.max_iter"],
            "outs": [MODEL],
        },
        "evaluate": {
            "cmd": "python -m mastery.ops.dvc_pipeline evaluate",
            "deps": [MODEL, f"{PREPARED}/test.csv"],
            "metrics": [{METRICS: {"cache": False}}],
        },
    }
}


def write_pipeline(root: Path, params: dict[str, Any]) -> None:
    """dvc.yaml and params.yaml in `root`."""
    import yaml

    (root / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    write_params(root, params)


def write_params(root: Path, params: dict[str, Any]) -> None:
    import yaml

    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _params() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(Path("params.yaml").read_text())


def prepare() -> None:
    """Stratified train/test split of the raw CSV."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    p = _params()["prepare"]
    df = pd.read_csv(DATA)
    train, test = train_test_split(df, test_size=p["test_size"], random_state=p["seed"], stratify=df["Survived"])
    Path(PREPARED).mkdir(parents=True, exist_ok=True)
    train.to_csv(f"{PREPARED}/train.csv", index=False)
    test.to_csv(f"{PREPARED}/test.csv", index=False)
    log.info("prepare: %d train, %d test rows", len(train), len(test))


def train() -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from mastery.serving.artifacts import save_artifact
    from mastery.tabular import titanic

    p = _params()["train"]
    x, y = titanic.split_xy(pd.read_csv(f"{PREPARED}/train.csv"), engineered=True)
    model = titanic.make_model(titanic.build_preprocessor(True),
                               LogisticRegression(C=p["C"], max_iter=p["max_iter"])).fit(x, y)
    save_artifact(model, f"{MODEL}/model.skops", name="titanic-dvc", training={"C": p["C"], "n_train": len(y)})


def evaluate() -> None:
    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    from mastery.serving.artifacts import load_artifact
    from mastery.tabular import titanic

    model = load_artifact(f"{MODEL}/model.skops").model
    x, y = titanic.split_xy(pd.read_csv(f"{PREPARED}/test.csv"), engineered=True)
    proba = model.predict_proba(x)[:, 1]
    pred = (proba >= 0.5).astype(int)
    metrics = {"accuracy": accuracy_score(y, pred), "f1": f1_score(y, pred), "roc_auc": roc_auc_score(y, proba)}
    Path(METRICS).write_text(json.dumps({k: round(float(v), 6) for k, v in metrics.items()}, indent=2) + "\n")


STAGES = {"prepare": prepare, "train": train, "evaluate": evaluate}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mastery.ops.dvc_pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from threadpoolctl import threadpool_limits

    # 900 rows: threaded BLAS gains nothing and spins on a shared machine.
    with threadpool_limits(limits=1):
        STAGES[args.stage]()


if __name__ == "__main__":
    main()
