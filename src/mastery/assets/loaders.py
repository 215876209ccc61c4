"""Loaders that turn registered files into ready objects (arrays, DataFrames, text)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import pickle  # only through _BatchUnpickler, which loads plain containers and numpy arrays
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mastery.assets.store import resolve
from mastery.core.errors import AssetError


def _read_csv(name: str, **kwargs: Any) -> pd.DataFrame:
    path = resolve(name)
    try:
        return pd.read_csv(path, **kwargs)
    except (OSError, ValueError, EOFError) as exc:
        raise AssetError(f"cannot read {name} from {path}: {exc}") from exc


def load_titanic() -> pd.DataFrame:
    return _read_csv("titanic")


def load_house_prices() -> pd.DataFrame:
    return _read_csv("house_prices")


def load_mnist() -> dict[str, np.ndarray]:
    """``x_train`` uint8 (60000, 28, 28), ``y_train`` (60000,), ``x_test``, ``y_test``."""
    with np.load(resolve("mnist")) as d:
        return {k: d[k] for k in ("x_train", "y_train", "x_test", "y_test")}


def load_cifar10() -> dict[str, Any]:
    """CIFAR-10 as uint8 NHWC arrays; the lossless official batches when they are present.

    Returns ``x_train``, ``y_train``, ``x_test``, ``y_test``, ``class_names`` and ``source``
    ("official" or "jpeg-q75"); the JPEG copy's train split is a 37,500-image subsample. Order: the
    official archive if it is here, else the mirror's JPEG copy, else the official archive fetched.
    """
    from mastery.assets.catalog import get_asset
    from mastery.assets.store import locate

    official, jpeg = get_asset("cifar10-official"), get_asset("cifar10")
    if locate(official) is not None or locate(jpeg) is None:
        return _load_cifar10_official(resolve(official, rehash=True))  # unpickled: never trust a stamp
    with np.load(resolve(jpeg)) as d:
        return {
            "x_train": d["x_train"], "y_train": d["y_train"].astype(np.int64),
            "x_test": d["x_test"], "y_test": d["y_test"].astype(np.int64),
            "class_names": [str(c) for c in d["class_names"]], "source": "jpeg-q75",
        }


# The only globals a CIFAR python batch refers to: numpy arrays (numpy 2 spells numpy.core numpy._core), and
# _codecs.encode, which Python 3 writes for bytes in protocol-2 pickles (it turns a str into bytes, nothing more).
_CIFAR_GLOBALS = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")})


def _latin1_encode(text: str, encoding: str) -> bytes:
    # What protocol-2 pickles of bytes call: codecs.encode(str, "latin1"); any other codec is refused.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"CIFAR batch asks for codec {encoding!r}, which is not allowed")
    return text.encode("latin-1")


class _BatchUnpickler(pickle.Unpickler):
    """Reads the CIFAR python batches (Python 2 pickles of dicts, lists, bytes and numpy arrays) and
    refuses every other global, so a tampered archive cannot run code even before its digest is known."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}, which is not allowed")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        if module == "_codecs":
            return _latin1_encode
        return getattr(np, name)


def read_cifar_batch(fh: Any) -> dict[bytes, Any]:
    """One CIFAR python batch (``data_batch_1`` ... ``test_batch``, ``batches.meta``) from a binary file."""
    try:
        batch = _BatchUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise AssetError(f"not a CIFAR python batch: {exc}") from exc
    if not isinstance(batch, dict):
        raise AssetError(f"not a CIFAR python batch: a {type(batch).__name__}, not a dict")
    return batch


def _load_cifar10_official(path: Path) -> dict[str, Any]:
    def batch(tf: tarfile.TarFile, member: str) -> dict[bytes, Any]:
        try:
            return read_cifar_batch(tf.extractfile(member))
        except KeyError:
            raise AssetError(f"{path.name} has no member {member}") from None

    with tarfile.open(path) as tf:
        train = [batch(tf, f"cifar-10-batches-py/data_batch_{i}") for i in range(1, 6)]
        test = batch(tf, "cifar-10-batches-py/test_batch")
        meta = batch(tf, "cifar-10-batches-py/batches.meta")

    def images(b: dict[bytes, Any]) -> np.ndarray:
        return np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)

    return {
        "x_train": np.concatenate([images(b) for b in train]),
        "y_train": np.concatenate([np.asarray(b[b"labels"]) for b in train]).astype(np.int64),
        "x_test": images(test), "y_test": np.asarray(test[b"labels"], dtype=np.int64),
        "class_names": [c.decode() for c in meta[b"label_names"]], "source": "official",
    }


def load_imdb() -> pd.DataFrame:
    """Columns split (train/test), label (0 neg, 1 pos), id, rating, text."""
    return _read_csv("imdb", keep_default_na=False)


def balanced_subset(df: pd.DataFrame, n: int | None, seed: int, label: str = "label") -> pd.DataFrame:
    """n rows, half of each of two labels (the odd one to label 1), in a seeded random order; all rows,
    shuffled, when n is None or not smaller than the frame."""
    if n is None or n >= len(df):
        return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    parts = [g.sample(n=min(len(g), n // 2 + (n % 2) * int(key == 1)), random_state=seed)
             for key, g in df.groupby(label)]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def load_tinyshakespeare() -> str:
    with gzip.open(resolve("tinyshakespeare"), "rt", encoding="utf-8") as fh:
        return fh.read()


def loghub_member(system: str, suffix: str = "_2k.log_structured.csv") -> str:
    return f"loghub/{system}/{system}{suffix}"


def load_loghub(system: str) -> pd.DataFrame:
    """The structured 2k-line sample of one loghub system (e.g. 'BGL', 'HDFS')."""
    with tarfile.open(resolve("loghub_2k")) as tf:
        try:
            member = tf.extractfile(loghub_member(system))
        except KeyError:
            raise AssetError(f"loghub_2k has no system '{system}'") from None
        return pd.read_csv(member, dtype=str, keep_default_na=False)


def load_deeplog_hdfs() -> dict[str, list[list[int]]]:
    """``normal_train`` and ``abnormal_test``: sessions as lists of log-key ids."""
    with tarfile.open(resolve("deeplog_hdfs")) as tf:
        def read(member: str) -> list[list[int]]:
            text = tf.extractfile(member).read().decode()
            return [list(map(int, line.split())) for line in text.splitlines() if line.strip()]

        return {
            "normal_train": read("deeplog_hdfs/data/hdfs_train"),
            "abnormal_test": read("deeplog_hdfs/data/hdfs_test_abnormal"),
        }


def load_phishing_urls() -> pd.DataFrame:
    df = _read_csv("phishing_urls", keep_default_na=False)
    df["label"] = (df["status"] == "phishing").astype(int)
    return df


def load_phishpedia_sites() -> dict[str, dict[str, bytes]]:
    """Site name -> {file name -> bytes} (shot.png, html.txt, info.txt, ...)."""
    sites: dict[str, dict[str, bytes]] = {}
    with tarfile.open(resolve("phishpedia_sites")) as tf:
        for member in tf.getmembers():
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3:
                sites.setdefault(parts[1], {})[parts[2]] = tf.extractfile(member).read()
    return sites


def load_attack_stix() -> list[dict[str, Any]]:
    with gzip.open(resolve("attack_stix"), "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


KB_PDFS = ("pdf-libtasn1-manual", "pdf-shared-mime-info-spec", "pdf-debian-faq")


def load_kb_pdfs(names: tuple[str, ...] = KB_PDFS) -> list[Path]:
    """Paths of the registered documentation PDFs (fetched from their Debian packages when missing)."""
    return [resolve(name) for name in names]


def load_ctibench() -> dict[str, pd.DataFrame]:
    """Each CTIBench task ('cti-mcq', 'cti-rcm', ...) as a DataFrame."""
    out = {}
    with tarfile.open(resolve("ctibench")) as tf:
        for member in tf.getmembers():
            if member.isfile() and member.name.endswith(".tsv"):
                raw = tf.extractfile(member).read().decode("utf-8")
                out[Path(member.name).stem] = pd.read_csv(
                    io.StringIO(raw), sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False
                )
    return out


def load_alpaca_demo() -> list[dict[str, str]]:
    with gzip.open(resolve("alpaca_demo"), "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_moons(n_samples: int = 1000, noise: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_moons

    return make_moons(n_samples=n_samples, noise=noise, random_state=seed)


LOADERS = {
    "titanic": load_titanic,
    "house_prices": load_house_prices,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "imdb": load_imdb,
    "tinyshakespeare": load_tinyshakespeare,
    "deeplog_hdfs": load_deeplog_hdfs,
    "phishing_urls": load_phishing_urls,
    "phishpedia_sites": load_phishpedia_sites,
    "attack_stix": load_attack_stix,
    "ctibench": load_ctibench,
    "alpaca_demo": load_alpaca_demo,
    "moons": load_moons,
}
