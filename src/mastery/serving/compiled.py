"""A compiled scoring path for the Titanic pipeline: ONNX (skl2onnx) run by onnxruntime, without pandas.

Why: the scikit-learn pipeline scores one passenger in about 6 ms, nearly all of it building a one-row
DataFrame and pushing it through the ColumnTransformer's pandas machinery; the arithmetic is a few dozen
flops. Converted to an ONNX graph and fed one small array per column, the same fitted numbers score a
passenger in tens of microseconds.

What is compiled and what is not:

* The pipeline's first step, :func:`mastery.tabular.titanic.add_features`, is Python (a regular
  expression pulls the title out of the name); ONNX has no operator for a capture-group search like
  pandas' ``str.extract``. :func:`engineered_columns` computes the same three columns per row from the
  same constants; a test holds it equal to ``add_features`` on every passenger.
* The fitted rest (median imputers, log1p, scalers, most-frequent imputer, one-hot encoder, logistic
  regression) is converted by skl2onnx from a copy in which (a) ``np.log1p`` and the median imputers
  become steps with float64 converters registered here (:func:`_float64_steps`), and (b) the categorical
  branch holds strings only: an ONNX tensor has one type, and the branch mixed strings (Sex, Embarked,
  Title) with integers (Pclass, IsAlone), so those two are fed as their decimal strings and their fitted
  categories and imputed values are written the same way ("3" for 3). Missing strings are ``""``.
* Everything runs in float64, so the probabilities equal the pipeline's to rounding (2.2e-16 at most
  over the 891 Titanic passengers), far inside the 1e-6 that is checked.

:func:`compile_titanic` converts in memory at load time (no second file to hash or to trust) and checks
the result against the pipeline on probe passengers before it is used; on any mismatch or conversion
error it raises :class:`CompileError` and the server keeps the scikit-learn path.

Measured here (2 shared cores): 55-110 microseconds a passenger against 6-16 ms for the pipeline; behind
HTTP, about 0.5 ms of server CPU a request against 13-18 ms (``benchmarks/predict_load.py``).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from mastery.core.errors import MasteryError

log = logging.getLogger(__name__)

TOLERANCE = 1e-6  # largest |p_onnx - p_sklearn| accepted at load time (float64 graphs give ~1e-15)
NUMERIC_INPUTS = ("Age", "SibSp", "Parch", "FamilySize", "Fare")
STRING_INPUTS = ("Sex", "Embarked", "Pclass", "Title", "IsAlone")
_TITLE = re.compile(r",\s*([^\.]+)\.")  # the pattern add_features gives pandas' str.extract

_BASE = {"Pclass": 3, "Sex": "male", "Age": 22.0, "SibSp": 1, "Parch": 0, "Fare": 7.25, "Embarked": "S",
         "Name": "Braund, Mr. Owen Harris"}
# Checked at every load: each class, sex, port and title, a missing age, port and name, a family, extremes.
PROBES: tuple[dict[str, Any], ...] = (
    _BASE,
    {**_BASE, "Pclass": 1, "Sex": "female", "Age": 38.0, "Fare": 71.2833, "Embarked": "C",
     "Name": "Cumings, Mrs. John Bradley (Florence Briggs Thayer)"},
    {**_BASE, "Pclass": 2, "Sex": "female", "Age": None, "Embarked": "Q", "Name": "Quick, Miss. Phyllis"},
    {**_BASE, "Age": 4.0, "SibSp": 4, "Parch": 1, "Fare": 29.125, "Embarked": None, "Name": "Rice, Master. Eugene"},
    {**_BASE, "Age": 120.0, "SibSp": 0, "Fare": 0.0, "Name": None},
    {**_BASE, "Age": 0.0, "SibSp": 20, "Parch": 20, "Fare": 10_000.0, "Name": "Odd, Rev. Title"},
    {**_BASE, "Name": "no comma or full stop"},
)


class CompileError(MasteryError):
    """The pipeline could not be converted to ONNX, or the converted graph disagrees with it."""


def engineered_columns(passenger: dict[str, Any]) -> tuple[float, str, str]:
    """(FamilySize, IsAlone as "0"/"1", Title) for one request dict, as ``add_features`` computes them."""
    from mastery.tabular.titanic import _TITLE_MAP

    family = passenger["SibSp"] + passenger["Parch"] + 1
    match = _TITLE.search(passenger.get("Name") or "")  # no name -> no title -> "Rare", as in to_frame
    title = _TITLE_MAP.get(match.group(1).strip(), "Rare") if match else "Rare"
    return float(family), "1" if family == 1 else "0", title


def feeds(passengers: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Request dicts (enums as their string values) -> the graph's two inputs: ``numbers`` ``(n, 5)`` float64
    (NUMERIC_INPUTS, NaN for a missing age) and ``strings`` ``(n, 5)`` (STRING_INPUTS, "" when missing)."""
    numbers, strings = [], []
    for p in passengers:
        family, alone, title = engineered_columns(p)
        age = p.get("Age")
        numbers.append((np.nan if age is None else age, p["SibSp"], p["Parch"], family, p["Fare"]))
        strings.append((p["Sex"], p.get("Embarked") or "", str(p["Pclass"]), title, alone))
    return {"numbers": np.array(numbers, dtype=np.float64), "strings": np.array(strings, dtype=object)}


def _two_inputs(onx: Any) -> Any:
    """Replace the graph's ten one-column inputs by two matrices split inside the graph: onnxruntime's
    per-call cost grows with the number of inputs, and one array per type is cheaper to build."""
    from onnx import TensorProto, helper

    graph = onx.graph
    names = {i.name for i in graph.input}
    if names != set(NUMERIC_INPUTS) | set(STRING_INPUTS):
        raise CompileError(f"the converted graph's inputs {sorted(names)} are not the expected columns")
    del graph.input[:]
    graph.input.extend([helper.make_tensor_value_info("numbers", TensorProto.DOUBLE, [None, len(NUMERIC_INPUTS)]),
                        helper.make_tensor_value_info("strings", TensorProto.STRING, [None, len(STRING_INPUTS)])])
    splits = [helper.make_node("Split", ["numbers"], list(NUMERIC_INPUTS), axis=1, name="split_numbers"),
              helper.make_node("Split", ["strings"], list(STRING_INPUTS), axis=1, name="split_strings")]
    nodes = [*splits, *graph.node]  # a graph's nodes are in topological order: the splits come first
    del graph.node[:]
    graph.node.extend(nodes)
    # Only the probabilities are read: without the label output, onnxruntime drops the nodes computing it.
    kept = [o for o in graph.output if o.name == "probabilities"]
    if len(kept) != 1:
        raise CompileError(f"the converted graph has no 'probabilities' output: {[o.name for o in graph.output]}")
    del graph.output[:]
    graph.output.extend(kept)
    return onx


@functools.cache
def _float64_steps() -> tuple[type, type]:
    """Two transformer classes with float64 ONNX converters, registered with skl2onnx on first use:

    * ``Log1p``: ``np.log1p`` (the fitted FunctionTransformer holds a ufunc, which skl2onnx refuses);
    * ``FillNaN``: a fitted median SimpleImputer (skl2onnx emits ONNX-ML's ``Imputer``, which onnxruntime
      runs in float32 only) as ``Where(IsNaN(x), statistics, x)`` in the input's own type.

    Built here rather than at import: scikit-learn and skl2onnx load only when a model is compiled.
    """
    from skl2onnx import update_registered_converter
    from skl2onnx.common.data_types import guess_numpy_type, guess_proto_type
    from sklearn.base import BaseEstimator, TransformerMixin

    class Log1p(TransformerMixin, BaseEstimator):
        def fit(self, x: Any, y: Any = None) -> Any:
            return self

        def transform(self, x: Any) -> Any:
            return np.log1p(x)

    class FillNaN(TransformerMixin, BaseEstimator):
        def __init__(self, statistics: Any = None) -> None:
            self.statistics = statistics

        def fit(self, x: Any, y: Any = None) -> Any:
            return self

        def transform(self, x: Any) -> Any:
            x = np.asarray(x, dtype=np.float64)
            return np.where(np.isnan(x), self.statistics, x)

    def same_shape(operator: Any) -> None:
        operator.outputs[0].type = operator.inputs[0].type.__class__(operator.inputs[0].type.shape)

    def concatenated(scope: Any, operator: Any, container: Any) -> str:
        if len(operator.inputs) == 1:
            return operator.inputs[0].full_name
        name = scope.get_unique_variable_name("columns")
        container.add_node("Concat", [i.full_name for i in operator.inputs], [name], axis=1,
                           name=scope.get_unique_operator_name("Concat"))
        return name

    def convert_log1p(scope: Any, operator: Any, container: Any) -> None:
        one = scope.get_unique_variable_name("one")
        container.add_initializer(one, guess_proto_type(operator.inputs[0].type), [], [1.0])
        shifted = scope.get_unique_variable_name("plus_one")
        container.add_node("Add", [concatenated(scope, operator, container), one], [shifted],
                           name=scope.get_unique_operator_name("Add"))
        container.add_node("Log", [shifted], [operator.outputs[0].full_name],
                           name=scope.get_unique_operator_name("Log"))

    def convert_fillnan(scope: Any, operator: Any, container: Any) -> None:
        x = concatenated(scope, operator, container)
        stats = np.asarray(operator.raw_operator.statistics, dtype=guess_numpy_type(operator.inputs[0].type))
        fill = scope.get_unique_variable_name("fill")
        container.add_initializer(fill, guess_proto_type(operator.inputs[0].type), [1, stats.size], stats.tolist())
        missing = scope.get_unique_variable_name("missing")
        container.add_node("IsNaN", [x], [missing], name=scope.get_unique_operator_name("IsNaN"))
        container.add_node("Where", [missing, fill, x], [operator.outputs[0].full_name],
                           name=scope.get_unique_operator_name("Where"))

    update_registered_converter(Log1p, "MasteryLog1p", same_shape, convert_log1p)
    update_registered_converter(FillNaN, "MasteryFillNaN", same_shape, convert_fillnan)
    return Log1p, FillNaN


def _as_strings(values: Any) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


def convertible_copy(model: Any) -> Any:
    """The fitted ColumnTransformer + classifier of the Titanic pipeline, rewritten as the module docstring
    says (Log1p, string-only categorical branch); ``model`` itself is left untouched."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    log1p, fill_nan = _float64_steps()

    try:
        columns = model.named_steps["prep"].named_steps["columns"]
        classifier = model.named_steps["model"]
    except (AttributeError, KeyError) as exc:
        raise CompileError(f"not the Titanic pipeline (prep -> columns, model): {exc}") from exc
    columns = copy.deepcopy(columns)
    for name, branch, _ in columns.transformers_:
        if isinstance(branch, str):  # "drop" (the remainder: Name, already turned into Title)
            continue
        steps = []
        for step_name, step in branch.steps:
            if isinstance(step, FunctionTransformer) and step.func is np.log1p:
                step = log1p()
            elif name in ("num", "fare") and isinstance(step, SimpleImputer):
                if not (isinstance(step.missing_values, float) and np.isnan(step.missing_values)):
                    raise CompileError(f"the {name} imputer replaces {step.missing_values!r}, not NaN")
                step = fill_nan(statistics=np.asarray(step.statistics_, dtype=np.float64))
            elif isinstance(step, FunctionTransformer):
                continue  # _as_object: a dtype cast, and the fed columns are already strings
            elif name == "cat" and hasattr(step, "statistics_"):
                step.statistics_ = _as_strings(step.statistics_)
                step.missing_values = ""
            elif name == "cat" and hasattr(step, "categories_"):
                step.categories_ = [_as_strings(c) for c in step.categories_]
            steps.append((step_name, step))
        branch.steps = steps
    expected = {"num": list(NUMERIC_INPUTS[:4]), "fare": ["Fare"], "cat": list(STRING_INPUTS)}
    found = {name: list(cols) for name, _, cols in columns.transformers_ if name in expected}
    if found != expected:
        raise CompileError(f"the pipeline's column groups {found} are not the ones this compiler knows {expected}")
    return Pipeline([("columns", columns), ("model", classifier)])


def import_onnxruntime() -> Any:
    """``import onnxruntime`` with its telemetry off.

    The Linux wheels (1.32 here) ship Microsoft's 1DS telemetry: importing the module writes a session file
    ``$TMPDIR/.ses`` and the library can post events to mobile.events.data.microsoft.com. The variable must
    be set before the first import; a process that imported onnxruntime earlier (chromadb does) at least
    gets the events switched off.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    ort.disable_telemetry_events()
    return ort


class CompiledTitanic:
    """P(survived) from an onnxruntime session over the converted graph: ``predict_proba(dicts)``."""

    engine = "onnx"

    def __init__(self, onnx_bytes: bytes) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        # One small graph per request: extra threads only add hand-offs, and spinning ones steal the cores
        # that other worker processes (and the HTTP parsing) need.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.onnx_bytes = onnx_bytes
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])

    def predict_proba(self, passengers: Sequence[dict[str, Any]]) -> np.ndarray:
        probs = self.session.run(["probabilities"], feeds(passengers))[0]  # (n, 2)
        return np.asarray(probs, dtype=np.float64)[:, 1]


def compile_titanic(model: Any, probes: Sequence[dict[str, Any]] = (), tolerance: float = TOLERANCE) -> CompiledTitanic:
    """Convert the fitted Titanic pipeline to ONNX in memory and check it against the pipeline on ``probes``
    (request dicts): a :class:`CompileError` names the largest difference if it exceeds ``tolerance``."""
    try:
        import onnx
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    except ImportError as exc:
        raise CompileError(f"skl2onnx is not installed ({exc}); pip install 'mastery[serve]'") from exc

    convertible = convertible_copy(model)
    inputs = [(c, DoubleTensorType([None, 1])) for c in NUMERIC_INPUTS]
    inputs += [(c, StringTensorType([None, 1])) for c in STRING_INPUTS]
    try:
        onx = convert_sklearn(convertible, initial_types=inputs, target_opset={"": 17, "ai.onnx.ml": 3},
                              options={id(convertible.named_steps["model"]): {"zipmap": False}})
        onx = _two_inputs(onx)
        onnx.checker.check_model(onx)
        compiled = CompiledTitanic(onx.SerializeToString())
    except Exception as exc:  # skl2onnx and onnxruntime raise many types; any of them means "no ONNX"
        raise CompileError(f"ONNX conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    if probes:
        from mastery.serving.titanic_model import predict_proba

        diff = float(np.max(np.abs(compiled.predict_proba(probes) - predict_proba(model, list(probes)))))
        if not diff <= tolerance:  # also refuses NaN
            raise CompileError(f"the ONNX graph differs from the pipeline by {diff:.3g} (> {tolerance:g}) on "
                               f"{len(probes)} probe passengers")
        log.info("compiled the pipeline to ONNX (%d bytes): max |difference| %.2g on %d probes",
                 len(compiled.onnx_bytes), diff, len(probes))
    return compiled
