"""Drives a running payoutd through a client generated from its OpenAPI document.

Run by the `generated_client_works` test (tests/api/contract.rs), which generates the
client with openapi-generator (`-g python`, package `payoutd_client`), puts it on
PYTHONPATH and starts payoutd with batches that wait, so that a new payout is still
cancellable. Usage: client.py BASE_URL TOKEN [PAYOUT_ID], on a database without other payouts. Exits non-zero on the first surprise.
"""

import sys

import payoutd_client
from payoutd_client.exceptions import ApiException

DESTINATION = "GDJJRRMBK4IWLEPJGIE6SXD2LP7REGZODU7WDC3I2D6MR37F4XSHBKX2"


def main(base: str, token: str, payout_id: str) -> None:
    config = payoutd_client.Configuration(host=base, access_token=token)
    with payoutd_client.ApiClient(config) as api_client:
        payouts = payoutd_client.PayoutsApi(api_client)
        request = payoutd_client.PayoutRequest(
            payout_id=payout_id,
            destination=DESTINATION,
            asset="native",
            amount="12.5",
            memo=payoutd_client.Memo(payoutd_client.MemoId(type="id", value="42")),
        )

        # Create: 202, a new payout.
        created = payouts.create_payout_with_http_info(request)
        assert created.status_code == 202, created.status_code
        assert created.data.payout_id == payout_id, created.data
        assert created.data.amount_stroops == 125_000_000, created.data
        assert created.data.state == payoutd_client.PayoutState.ACCEPTED, created.data

        # Duplicate: 200, the same payout, nothing new.
        duplicate = payouts.create_payout_with_http_info(request)
        assert duplicate.status_code == 200, duplicate.status_code
        assert duplicate.data.payout_id == payout_id, duplicate.data

        # The same id with other content: 409 payout_conflict, as documented.
        other = request.model_copy(update={"amount": "13"})
        try:
            payouts.create_payout(other)
        except ApiException as e:
            assert e.status == 409, e.status
            assert '"payout_conflict"' in e.body, e.body
        else:
            raise AssertionError("a conflicting payout was accepted")

        # Get.
        got = payouts.get_payout(payout_id)
        assert got.payout_id == payout_id and got.amount == "12.5", got

        # List, a page of one.
        page = payouts.list_payouts(limit=1)
        assert [p.payout_id for p in page.payouts] == [payout_id], page
        assert page.next_cursor == payout_id, page
        rest = payouts.list_payouts(after=page.next_cursor, limit=1)
        assert rest.payouts == [] and rest.next_cursor is None, rest

        # Cancel (the batch it waits for has not left yet).
        cancelled = payouts.cancel_payout(
            payout_id, payoutd_client.OperatorAction(reason="generated client test")
        )
        assert cancelled.state == payoutd_client.PayoutState.CANCELLED, cancelled
        again = payouts.get_payout(payout_id)
        assert again.state == payoutd_client.PayoutState.CANCELLED, again

        # An unknown id: 404 payout_not_found.
        try:
            payouts.get_payout("no-such-payout")
        except ApiException as e:
            assert e.status == 404 and '"payout_not_found"' in e.body, (e.status, e.body)
        else:
            raise AssertionError("an unknown payout was found")
    print("generated client: create, duplicate, conflict, get, list, cancel, not found: ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "client-0001")
