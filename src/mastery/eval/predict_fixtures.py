"""Requests for the Titanic prediction API (L25): good passengers and one bad request per rule the schema
enforces, each with the status and the field its error must name. The lab, its tests and the load benchmark
use these.
"""

from __future__ import annotations

from typing import Any

PASSENGERS = {  # name -> request body; Name carries the title feature
    "1st-class woman, 38": {"Pclass": 1, "Sex": "female", "Age": 38.0, "SibSp": 1, "Parch": 0, "Fare": 71.28,
                            "Embarked": "C", "Name": "Cumings, Mrs. John Bradley"},
    "3rd-class man, 22": {"Pclass": 3, "Sex": "male", "Age": 22.0, "SibSp": 1, "Parch": 0, "Fare": 7.25,
                          "Embarked": "S", "Name": "Braund, Mr. Owen Harris"},
    "3rd-class boy, 4": {"Pclass": 3, "Sex": "male", "Age": 4.0, "SibSp": 4, "Parch": 1, "Fare": 29.13,
                         "Embarked": "Q", "Name": "Rice, Master. Eugene"},
    "2nd-class girl, 8": {"Pclass": 2, "Sex": "female", "Age": 8.0, "SibSp": 0, "Parch": 2, "Fare": 26.25,
                          "Embarked": "S", "Name": "Quick, Miss. Phyllis May"},
    "required fields only": {"Pclass": 2, "Sex": "male", "SibSp": 0, "Parch": 0, "Fare": 13.0},
}

_BASE = PASSENGERS["3rd-class man, 22"]
# (what is wrong, endpoint, body (dict, or raw bytes), expected status, field the error must name)
BAD_REQUESTS: list[tuple[str, str, Any, int, str | None]] = [
    ("Pclass out of range (4)", "/predict", {**_BASE, "Pclass": 4}, 422, "Pclass"),
    ("Pclass as a string", "/predict", {**_BASE, "Pclass": "3"}, 422, "Pclass"),
    ("Sex not in the enum", "/predict", {**_BASE, "Sex": "unknown"}, 422, "Sex"),
    ("Sex missing", "/predict", {k: v for k, v in _BASE.items() if k != "Sex"}, 422, "Sex"),
    ("negative Age", "/predict", {**_BASE, "Age": -1}, 422, "Age"),
    ("Age 200", "/predict", {**_BASE, "Age": 200}, 422, "Age"),
    ("negative SibSp", "/predict", {**_BASE, "SibSp": -1}, 422, "SibSp"),
    ("fractional Parch", "/predict", {**_BASE, "Parch": 2.5}, 422, "Parch"),
    ("negative Fare", "/predict", {**_BASE, "Fare": -5.0}, 422, "Fare"),
    ("Embarked not a port", "/predict", {**_BASE, "Embarked": "X"}, 422, "Embarked"),
    ("Name of 201 characters", "/predict", {**_BASE, "Name": "x" * 201}, 422, "Name"),
    ("Cabin of 51 characters", "/predict", {**_BASE, "Cabin": "C" * 51}, 422, "Cabin"),
    ("extra field (the label!)", "/predict", {**_BASE, "Survived": 1}, 422, "Survived"),
    ("not JSON", "/predict", b'{"Pclass": 3,', 422, "body"),
    ("a JSON list, not an object", "/predict", b"[1, 2, 3]", 422, "body"),
    ("empty batch", "/predict/batch", {"passengers": []}, 422, "passengers"),
    ("batch of 101", "/predict/batch", {"passengers": [_BASE] * 101}, 422, "passengers"),
    ("bad Age in batch item 1", "/predict/batch", {"passengers": [_BASE, {**_BASE, "Age": 999}]}, 422,
     "passengers.1.Age"),
    ("600 kB body", "/predict", b'{"Name": "' + b"x" * 600_000 + b'"}', 413, None),
]
