"""The money decisions made in one place: what a provider may be asked for, what pays a payment,
what a refund leaves."""
from __future__ import annotations

from models.money import pays
from payments.providers.mpesa import MpesaProvider
from payments.settlement import after_refund, payable_problem, refundable_minor, settles


def test_a_report_pays_exactly_what_is_owed_in_any_spelling_of_the_currency() -> None:
    assert pays(1999, "USD", 1999, "usd") is None and pays(1999, "USD", None, None) is None
    assert pays(1999, "USD", 1998, "USD") and pays(1999, "USD", 1999, "EUR") and pays(1999, "KES", 1999, "")
    payment = {"amount_minor": 500, "currency": "KES"}
    assert settles(payment, 500, "KES") is None and settles(payment, 400, "KES")


def test_a_provider_says_what_it_cannot_be_asked_for() -> None:
    mpesa = MpesaProvider("k", "s", "p", "174379", "http://127.0.0.1:9", "t")
    assert payable_problem(mpesa, 1000, "KES") is None
    assert "whole shillings" in payable_problem(mpesa, 1050, "KES")
    assert "KES" in payable_problem(mpesa, 1000, "USD")

    class Card:
        name = "stripe"
    assert payable_problem(Card(), 1050, "USD") is None


def test_refunds_add_up_to_the_payment() -> None:
    payment = {"amount_minor": 1000, "refunded_minor": 300}
    assert refundable_minor(payment) == 700
    assert after_refund(payment, 200) == (500, "partially_refunded")
    assert after_refund(payment, 700) == (1000, "refunded")
