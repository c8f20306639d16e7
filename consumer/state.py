"""What the server keeps in its application: typed keys (aiohttp ``AppKey``)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from runstream.connection import RedisClient
from runstream.consumer.reader import RecordReader
from runstream.consumer.series_cache import SeriesCache
from runstream.consumer.settings import ServerSettings
from runstream.consumer.sse import FeedHub
from runstream.object_artifacts import ServedStore

__all__ = ["HUB", "READER", "REDIS", "SERIES_CACHE", "SETTINGS", "STORE", "UPLOADS"]

SETTINGS = web.AppKey("settings", ServerSettings)
REDIS = web.AppKey[RedisClient]("redis")
READER = web.AppKey("reader", RecordReader)
HUB = web.AppKey("hub", FeedHub)
STORE = web.AppKey[ServedStore]("store")
SERIES_CACHE = web.AppKey("series_cache", SeriesCache)
#: Uploads in progress: at most ``ServerSettings.max_uploads`` hold it at once.
UPLOADS = web.AppKey("uploads", asyncio.Semaphore)
