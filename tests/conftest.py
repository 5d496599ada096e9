import os
import sys

# The notebook reference lives beside the tests.
sys.path.insert(0, os.path.dirname(__file__))
