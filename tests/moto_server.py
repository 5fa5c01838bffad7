"""The moto server the AWS test suites run against: `python3 tests/moto_server.py PORT`.

It is moto's own server application with one difference: DynamoDB requests are handled one at
a time. moto's backends take no locks, so on its threaded server two concurrent
TransactWriteItems can both pass their conditions and both apply, which real DynamoDB never
allows (transactions on the same items are serialized). SQS requests stay concurrent, so long
polls do not hold up everything else.

And one economy: moto backs up every table a transaction touches (a deep copy of the whole
table, stream records included) so that it can roll back. That makes each transaction cost as
much as the tables are big, and its memory grew past 18 GB in the cost model's 1,000-member
group. Here a transaction backs up only the items it touches, and a rollback puts those back
and drops the stream records it added: the same outcome, at the cost of the transaction.
"""
import copy
import sys
import threading

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


class _TablesNotCopied:
    """moto's models module's `copy`, except that a table is not copied (see above)."""

    @staticmethod
    def deepcopy(x, memo=None):
        return x if isinstance(x, Table) else copy.deepcopy(x, memo)


dynamodb_models.copy = _TablesNotCopied
_transact_write_items = DynamoDBBackend.transact_write_items


def _key_of(table, op_type, op):
    attrs = op["Item"] if op_type == "Put" else op["Key"]
    h = DynamoType(attrs[table.hash_key_attr])
    r = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
    return h, r


def _restore(table, h, r, item):
    if r is None:
        if item is None:
            table.items.pop(h, None)
        else:
            table.items[h] = item
    elif item is None:
        table.items.get(h, {}).pop(r, None)
    else:
        table.items[h][r] = item


def transact_write_items(self, transact_items):
    saved, streams = [], {}
    for entry in transact_items:
        op_type, op = next(iter(entry.items()))
        table = self.tables.get(op.get("TableName")) if isinstance(op, dict) else None
        if table is None:
            continue
        try:
            h, r = _key_of(table, op_type, op)
        except (KeyError, TypeError):
            continue  # moto rejects it before writing anything
        current = table.items.get(h) if r is None else table.items.get(h, {}).get(r)
        saved.append((table, h, r, copy.deepcopy(current)))
        if table.stream_shard is not None:
            streams.setdefault(id(table), (table.stream_shard, len(table.stream_shard.items)))
    try:
        return _transact_write_items(self, transact_items)
    except Exception:
        for table, h, r, item in reversed(saved):  # reversed: a key's first backup wins
            _restore(table, h, r, item)
        for shard, n in streams.values():
            del shard.items[n:]
        raise


DynamoDBBackend.transact_write_items = transact_write_items

app = DomainDispatcherApplication(create_backend_app)
dynamodb = threading.Lock()


def serialize_dynamodb(environ, start_response):
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
        with dynamodb:
            return list(app(environ, start_response))
    return app(environ, start_response)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    run_simple("127.0.0.1", port, serialize_dynamodb, threaded=True)
