import sys

from kubenode.cli import main

sys.exit(main())
