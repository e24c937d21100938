import sys

from tests.infra.guest import main

sys.exit(main(sys.argv[1:]))
