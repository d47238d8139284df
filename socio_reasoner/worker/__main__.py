"""Entry point: ``python -m socio_reasoner.worker`` serves requests on stdin/stdout."""

from .server import main

if __name__ == "__main__":
    raise SystemExit(main())
