from harness_fixtures import envoys, pytest_sessionstart, upstream  # noqa: F401
