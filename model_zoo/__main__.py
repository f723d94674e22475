import sys

from model_zoo.cli import main

sys.exit(main())
