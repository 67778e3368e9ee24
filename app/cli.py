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
    from app.mapping.sources import load_sources
    from app.mapping.study_spec import load_studies
    from app.store.db import make_engine, migrate

    studies = load_studies(settings.mappings_dir / "studies")
    sources = load_sources(settings.mappings_dir / "sources")
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        prepare_store(engine, settings, studies, sources, load_demo=settings.load_demo).close()
    finally:
        engine.dispose()


def _import(args: argparse.Namespace) -> int:
    """`trialbridge import SPEC FILE`: the same import as POST /api/imports/{spec}, in-process."""
    import json
    from pathlib import Path

    from app.content import prepare_store
    from app.fhir.errors import FhirError
    from app.mapping.imports import describe, run_import
    from app.mapping.sources import load_sources
    from app.mapping.study_spec import load_studies
    from app.store.db import make_engine, migrate

    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    sources = load_sources(settings.mappings_dir / "sources")
    spec = sources.get(args.spec)
    if spec is None:
        print(f"unknown spec {args.spec!r}; the specs are: {', '.join(sources.kinds())}", file=sys.stderr)
        return 2
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    studies = load_studies(settings.mappings_dir / "studies")
    engine = make_engine(settings.database_url)
    store = None
    try:
        migrate(engine)
        store = prepare_store(engine, settings, studies, sources, load_demo=False)
        summary = run_import(store, studies, spec, data, dry_run=args.dry_run)
    except FhirError as exc:
        print(f"{args.file}: not imported ({exc.status})\n{describe(exc)}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.close()
        engine.dispose()
    print(json.dumps(summary.to_json(), indent=2, ensure_ascii=False))
    return 0


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
    imports = commands.add_parser("import", help="import a CSV source file (all or nothing) through its spec")
    imports.add_argument("spec", help="the source spec: enrolment, dosing, labs, madrs, ... (mappings/sources)")
    imports.add_argument("file", help="the CSV file (UTF-8, comma-separated, one header row)")
    imports.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="as for serve")
    imports.add_argument("--dry-run", action="store_true", help="check the file and report, without writing")
    imports.set_defaults(handler=_import)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
