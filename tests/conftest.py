import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # tests/reference_globalmamba.py


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: end-to-end tests (still part of make test)')
