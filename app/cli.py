"""Command line: `trialbridge serve` (and, later, imports and exports)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from app.config import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    overrides: dict[str, object] = {"load_demo": args.demo}
    if args.validation_workers is not None:
        overrides["validation_workers"] = args.validation_workers
    if args.database_url:
        overrides["database_url"] = args.database_url
    settings = Settings(**overrides)  # type: ignore[arg-type]
    print(
        f"TrialBridge FHIR R4 server on http://{args.host}:{args.port}/fhir "
        f"(database: {settings.database_url.split('@')[-1]})",
        file=sys.stderr,
    )
    options = {"host": args.host, "port": args.port, "log_level": args.log_level, "access_log": args.access_log}
    if args.workers <= 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    # Several worker processes (stateless replicas sharing the database): migrate and load the demo once,
    # here, so that the workers do not race to create tables; each worker builds its app from the environment.
    _prepare_database(settings)
    os.environ["TRIALBRIDGE_DATABASE_URL"] = settings.database_url
    if settings.validation_workers is not None:
        os.environ["TRIALBRIDGE_VALIDATION_WORKERS"] = str(settings.validation_workers)
    uvicorn.run("app.main:create_app", factory=True, workers=args.workers, **options)
    return 0


def _prepare_database(settings: Settings) -> None:
    from app.content import prepare_store
    from app.mapping.study_spec import load_studies
    from app.store.db import make_engine, migrate

    studies = load_studies(settings.mappings_dir / "studies")
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        prepare_store(engine, settings, studies, load_demo=settings.load_demo)
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trialbridge", description="FHIR interoperability for clinical trials.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the FHIR server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="sqlite:///path or postgresql://user@host/db (default: sqlite under var/)",
    )
    serve.add_argument("--demo", action="store_true", help="load the demo fixtures at start-up (idempotent)")
    serve.add_argument(
        "--validation-workers",
        type=int,
        default=None,
        help="processes validating large bundles (default: one per core; 0: inline)",
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="server processes sharing the database (default 1); e.g. one per core"
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false")
    serve.set_defaults(handler=_serve)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
