"""What every page of the web app is handed: ``request.app.state.ui`` is a ``UiContext``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from jinja2 import Environment

from modelyard.config import Settings
from modelyard.serving.auth import ApiKeys
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.database import Database, open_database

__all__ = ["UiContext"]


@dataclass
class UiContext:
    """The app's settings, its one metadata database and its security settings.

    ``db`` is opened by the app's lifespan (and on first use when a test drives the app
    without one); it is closed when the app stops.
    """

    settings: Settings
    read_only: bool
    api_keys: ApiKeys
    csrf_secret: bytes
    jinja: Environment
    #: ``(label, path)`` of the top navigation
    nav: list[tuple[str, str]] = field(default_factory=list)
    _db: Database | None = None
    _artifacts: ArtifactStore | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def db(self) -> Database:
        """The metadata database, opened (and migrated) once."""
        if self._db is None:
            with self._lock:
                if self._db is None:
                    self._db = open_database(self.settings.db_url)
        return self._db

    @property
    def artifacts(self) -> ArtifactStore:
        """The artifact store (local folder or object store), opened on first use."""
        if self._artifacts is None:
            self._artifacts = ArtifactStore(self.settings.artifacts)
        return self._artifacts

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
