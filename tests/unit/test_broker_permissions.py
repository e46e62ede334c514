"""broker_config/definitions.json grants each user only what its role needs.

RabbitMQ matches permission and policy regexes with ``re:run`` (a search anywhere in
the name); ``_permits`` does the same. tests/integration/test_permissions.py runs an
engine, containers and a client on the real broker with exactly these permissions.
"""

from __future__ import annotations

import re

from test_deployment_files import FUNCTION_QUEUE, RESULT_QUEUE, _definitions, _permissions, _permits

SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000
CALL_QUEUE = "warren.v1.main.call.c1"
CANCEL_LISTENER = "warren.v1.main.cancels.container-1"


def test_client_cannot_consume_configure_or_bind_function_queues() -> None:
    for permission in _permissions("warren-client"):
        assert not _permits(permission["read"], FUNCTION_QUEUE)
        assert not _permits(permission["configure"], FUNCTION_QUEUE)
        assert not _permits(permission["write"], FUNCTION_QUEUE)


def test_client_cannot_touch_engine_control_delays_or_dead_letters() -> None:
    for permission in _permissions("warren-client"):
        for name in (
            "warren.v1.control",
            "warren.v1.control.run1",
            "warren.v1.dlx",
            "warren.v1.main.dead",
            "warren.v1.main.delay",
            "warren.v1.main.delay.1000",
        ):
            assert not _permits(permission["read"], name), name
            assert not _permits(permission["configure"], name), name
            assert not _permits(permission["write"], name), name


def test_client_owns_its_result_lease_and_call_queues_and_binds_them_to_replies() -> None:
    for permission in _permissions("warren-client"):
        for name in (RESULT_QUEUE, "warren.v1.main.lease.abc", CALL_QUEUE):
            assert _permits(permission["configure"], name), name
            assert _permits(permission["read"], name), name
        for name in (RESULT_QUEUE, CALL_QUEUE):  # queue.bind: write on the queue
            assert _permits(permission["write"], name), name
        assert _permits(permission["read"], "warren.v1.replies")  # and read on the exchange


def test_client_publishes_through_the_default_and_cancel_exchanges_only() -> None:
    for permission in _permissions("warren-client"):
        assert _permits(permission["write"], "amq.default")
        assert _permits(permission["write"], "warren.v1.main.cancel")
        assert not _permits(permission["write"], "amq.topic")
        assert not _permits(permission["write"], "warren.v1.replies")
        assert not _permits(permission["write"], "warren.v1.main.cancel.x")


def test_client_permissions_do_not_reach_outside_warren_names() -> None:
    for permission in _permissions("warren-client"):
        for kind in ("configure", "read"):
            assert not _permits(permission[kind], "other.app.results.x")
            assert not _permits(permission[kind], "amq.gen-abc")


def test_container_consumes_function_queues_and_publishes_results_only() -> None:
    for permission in _permissions("warren-container"):
        assert _permits(permission["read"], FUNCTION_QUEUE)
        assert _permits(permission["write"], "warren.v1.replies")
        # No call can be published: no default exchange, no function or delay queue
        for name in ("amq.default", FUNCTION_QUEUE, "warren.v1.main.delay", "warren.v1.dlx"):
            assert not _permits(permission["write"], name), name
        # Nor can it read anyone's results or declare anything but its cancel queue
        for name in (RESULT_QUEUE, CALL_QUEUE, "warren.v1.control"):
            assert not _permits(permission["read"], name), name
        assert _permits(permission["configure"], CANCEL_LISTENER)
        assert not _permits(permission["configure"], FUNCTION_QUEUE)
        assert _permits(permission["read"], "warren.v1.main.cancel")  # bind to the broadcast


def test_engine_can_use_every_warren_name_and_publish_to_queues() -> None:
    names = (
        FUNCTION_QUEUE,
        "warren.v1.main.fn.app.f.variant",
        RESULT_QUEUE,
        "warren.v1.control",
        "warren.v1.control.run1",
        "warren.v1.dlx",
        "warren.v1.replies",
        "warren.v1.main.dead",
        "warren.v1.main.delay.1000",
        "warren.v1.main.cancel",
        CALL_QUEUE,
    )
    for permission in _permissions("warren-engine"):
        for name in names:
            for kind in ("configure", "write", "read"):
                assert _permits(permission[kind], name), (kind, name)
        # It requeues inputs and answers control requests through the default exchange.
        assert _permits(permission["write"], "amq.default")
        assert not _permits(permission["configure"], "other.queue")


def _policies(name: str) -> list[dict[str, object]]:
    found = [p for p in _definitions()["policies"] if p["name"] == name]
    assert found, name
    return found


def test_policy_patterns_compile_and_target_the_right_queues() -> None:
    policies = _definitions()["policies"]
    vhosts = {v["name"] for v in _definitions()["vhosts"]}
    names = ("warren-dead-letter", "warren-dead-ttl", "warren-result-expiry", "warren-call-expiry")

    for policy in policies:
        re.compile(policy["pattern"])
        assert policy["vhost"] in vhosts
        assert policy["apply-to"] == "queues"
        assert policy["priority"] == 0
    assert {(p["vhost"], p["name"]) for p in policies} == {
        (vhost, name) for vhost in vhosts for name in names
    }
    # RabbitMQ applies one policy per queue: no queue may match two of them.
    for queue in (FUNCTION_QUEUE, RESULT_QUEUE, CALL_QUEUE, "warren.v1.main.dead"):
        matching = {p["name"] for p in policies if _permits(str(p["pattern"]), queue)}
        assert len(matching) == 1, (queue, matching)


def test_function_queues_dead_letter_to_the_dlx() -> None:
    for policy in _policies("warren-dead-letter"):
        assert policy["definition"] == {"dead-letter-exchange": "warren.v1.dlx"}
        assert _permits(str(policy["pattern"]), FUNCTION_QUEUE)
        assert _permits(str(policy["pattern"]), "warren.v1.main.fn.app.f.variant")
        assert not _permits(str(policy["pattern"]), RESULT_QUEUE)


def test_dead_letters_and_results_expire() -> None:
    for policy in _policies("warren-dead-ttl"):
        assert policy["definition"] == {"message-ttl": SEVEN_DAYS_MS}
        assert _permits(str(policy["pattern"]), "warren.v1.main.dead")
        assert not _permits(str(policy["pattern"]), "warren.v1.main.dead.x")
    for policy in _policies("warren-result-expiry"):
        assert policy["definition"] == {"expires": 3600 * 1000}
    for policy in _policies("warren-call-expiry"):
        assert policy["definition"] == {"expires": SEVEN_DAYS_MS, "message-ttl": SEVEN_DAYS_MS}
