"""The engine's dashboard: a read-only web page on the HTTP gateway, behind a token.

``/`` is the page (three static files of :mod:`static <warren_engine.daemon.dashboard>`,
no build step, nothing fetched from elsewhere), which polls JSON under
``/_dashboard/api/``: the apps and their pools (:mod:`.overview`), queue depth and
throughput over the last ten minutes (:mod:`.history`), the last failures of each pool
(:mod:`warren_engine.pool.failure_log`), a function's log tail (:mod:`.log_tail`) and
the dead-letter queue (:mod:`.dead_letter_panel`). :mod:`.access` owns the token;
:mod:`.dashboard` the routes and the tasks behind them.

No environment name can start with ``_`` (:func:`warren.names.check_part`), so nothing
under ``/_dashboard/`` is ever a web endpoint's path (``/{environment}/{app}/{function}``).
"""
