"""Data and model registry: canonical source, sha256, license, offline mirror, cache, loaders."""

from mastery.assets.catalog import ASSETS, Asset, get_asset
from mastery.assets.store import asset_status, pull, resolve, verify

__all__ = ["ASSETS", "Asset", "asset_status", "get_asset", "pull", "resolve", "verify"]
