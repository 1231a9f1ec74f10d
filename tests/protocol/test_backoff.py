from flask_sente.protocol.backoff import backoff_delay


def test_first_retry_is_immediate():
    assert backoff_delay(1, 0.99) == 0.0
    assert backoff_delay(0, 0.5) == 0.0


def test_doubles_with_equal_jitter():
    assert backoff_delay(2, 0.0) == 0.5 and backoff_delay(2, 0.999) < 1.0
    assert backoff_delay(3, 0.0) == 1.0
    assert backoff_delay(4, 0.0) == 2.0


def test_capped():
    assert backoff_delay(50, 0.0) == 15.0
    assert backoff_delay(10_000, 0.999) < 30.0
    assert backoff_delay(10, 0.999, cap=5.0) < 5.0
