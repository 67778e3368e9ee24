"""Runtime settings, read from the environment (prefix ``TRIALBRIDGE_``) or passed by the CLI."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("var") / "trialbridge.sqlite3"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIALBRIDGE_", extra="ignore")

    # DATABASE_URL without prefix is honoured too: it is what operators and PaaS set.
    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_SQLITE_PATH}",
        validation_alias=AliasChoices("database_url", "TRIALBRIDGE_DATABASE_URL", "DATABASE_URL"),
    )
    max_body_bytes: int = 50 * 1024 * 1024
    max_bundle_entries: int = 10_000
    default_page_size: int = 50
    max_page_size: int = 1_000
    base_url: str | None = None  # public base of the FHIR endpoint; derived from the request when unset
    # Worker processes validating big bundles; None: one per available core (0 on a single core).
    validation_workers: int | None = None
    # Connections a whole-population eligibility screening runs its shards on, side by side (PostgreSQL); None:
    # one per core of this machine (right when the database runs here; set it to the database's cores otherwise).
    screening_parallel: int | None = Field(default=None, ge=1)
    load_demo: bool = False
    fixtures_dir: Path = Path(__file__).resolve().parent.parent / "fixtures"
    mappings_dir: Path = Path(__file__).resolve().parent.parent / "mappings"

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not url.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError(f"unsupported database URL {url.split(':', 1)[0]!r}: use sqlite:/// or postgresql://")
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            # SQLAlchemy would pick psycopg2, which we do not ship; psycopg 3 is the driver.
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
