"""``chestdx serve``: the web service (FastAPI) and the radiologist's viewer in the browser.

A front end: uploads become jobs in a database (SQLAlchemy), worker processes run them
through ``chestdx.pipeline`` and the output writers, and the viewer page reads the results.
"""

from chestdx.serve.app import Settings, create_app

__all__ = ["Settings", "create_app"]
