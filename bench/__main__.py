import importlib
import sys

if len(sys.argv) < 2:
    print("usage: python -m bench NAME [ARGS...]", file=sys.stderr)
    sys.exit(2)
module = importlib.import_module(f"bench.{sys.argv[1]}")
sys.exit(module.main(sys.argv[2:]))
