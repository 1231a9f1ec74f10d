"""The app's extension objects, made once at import and bound to apps by ``create_app``.

Blueprint modules import ``sente`` from here (not from the package's ``__init__``), so there
is no import cycle and no app is needed to register handlers.
"""
from flask_sente import Sente

sente = Sente()   # no app yet: create_app() calls sente.init_app(app)
