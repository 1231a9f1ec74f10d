import pytest
from chat import create_app


@pytest.fixture
def sente_app():
    """The app flask_sente's fixtures serve: a fresh one for every test."""
    return create_app()
