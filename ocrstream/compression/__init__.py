"""Optical context compression: compression curves, automatic mode choice, progressive forgetting.

* ``ladder``        - the resolution modes a given model offers, most tokens first
* ``curve``         - measured precision vs compression ratio per mode (``compression_curve.json``)
* ``density``       - cheap text-density estimates from a PDF text layer or a page image
* ``auto_mode``     - ``choose_mode``: the cheapest mode expected to meet a precision target
* ``planner``       - the pure budget/age planning function behind progressive forgetting
* ``render``        - text segments rendered to page images
* ``context_store`` - segments kept as vision tokens under a token budget, fading with age
* ``http``          - an APIRouter exposing a context store over HTTP
"""
