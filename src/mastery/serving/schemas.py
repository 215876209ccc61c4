"""Request and response models of the prediction API (pydantic v2).

The request model is the contract: anything outside it is refused with a 422 that names the field,
before the model ever sees it. Bounds are generous for real passengers (Fare up to 10,000, the data's
maximum is 512) but finite, so no value can overflow a column or the scaler. Numbers are strict
(JSON ``"3"`` or ``true`` is not a class), so the OpenAPI schema and the validator agree exactly.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_BATCH = 100
LABELS = {0: "died", 1: "survived"}

EXAMPLE_PASSENGER: dict[str, Any] = {
    "Pclass": 1, "Sex": "female", "Age": 38.0, "SibSp": 1, "Parch": 0, "Fare": 71.2833, "Embarked": "C",
    "Name": "Cumings, Mrs. John Bradley (Florence Briggs Thayer)", "Ticket": "PC 17599", "Cabin": "C85",
}


def whole_number(value: Any) -> Any:
    # JSON Schema's "integer" includes 3.0 (and schemathesis sends it); strict pydantic ints do not.
    # Accept integral floats, leave everything else (bools, strings, 2.5) to the strict check.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(whole_number)]


class Sex(StrEnum):
    male = "male"
    female = "female"


class Port(StrEnum):
    """Port of embarkation: Cherbourg, Queenstown, Southampton."""

    C = "C"
    Q = "Q"
    S = "S"


class Passenger(BaseModel):
    """One Titanic passenger, with the Kaggle column names."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_PASSENGER]})

    Pclass: WholeNumber = Field(ge=1, le=3, strict=True, description="ticket class: 1 = first, 2 = second, 3 = third")
    Sex: Sex
    Age: float | None = Field(default=None, ge=0, le=120, strict=True, allow_inf_nan=False,
                              description="years; omit when unknown (the training median is used)")
    SibSp: WholeNumber = Field(ge=0, le=20, strict=True, description="siblings and spouses aboard")
    Parch: WholeNumber = Field(ge=0, le=20, strict=True, description="parents and children aboard")
    Fare: float = Field(ge=0, le=10_000, strict=True, allow_inf_nan=False, description="ticket price in pounds")
    Embarked: Port | None = Field(default=None, description="omit when unknown (the most frequent port is used)")
    Name: str | None = Field(default=None, max_length=200, strict=True,
                             description="'Surname, Title. Given names': the title (Mr, Mrs, Miss, Master) is a "
                                         "feature; without a name the title counts as rare")
    Ticket: str | None = Field(default=None, max_length=50, strict=True, description="not used by the model")
    Cabin: str | None = Field(default=None, max_length=50, strict=True, description="not used by the model")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passengers: list[Passenger] = Field(min_length=1, max_length=MAX_BATCH,
                                        description=f"1 to {MAX_BATCH} passengers")


class PredictionItem(BaseModel):
    prediction: Literal[0, 1] = Field(description="1 = survived, 0 = died")
    label: Literal["died", "survived"]
    probability: float = Field(ge=0, le=1, description="P(survived)")
    confidence: float = Field(ge=0.5, le=1, description="probability of the predicted class")


class Prediction(PredictionItem):
    model_version: str = Field(description="sha256 prefix of the served model file")
    request_id: str


class BatchPrediction(BaseModel):
    predictions: list[PredictionItem]
    model_version: str
    request_id: str


class Health(BaseModel):
    status: Literal["ok"]
    model_version: str


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str
    created: str
    estimator: str
    threshold: float
    labels: dict[str, str]
    training: dict[str, Any]
    libraries: dict[str, str]
    feature_schema: dict[str, Any]


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the bad field, e.g. 'Age' or 'passengers.2.Sex'")
    message: str
    type: str


class ErrorResponse(BaseModel):
    error: str = Field(description="one line that names the problem (and the fields)")
    detail: list[FieldError] = Field(default_factory=list)
    request_id: str
