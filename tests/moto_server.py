"""The moto server the AWS test suites run against: `python3 tests/moto_server.py PORT`.

It is moto's own server application with one difference: DynamoDB requests are handled one at
a time. moto's backends take no locks, so on its threaded server two concurrent
TransactWriteItems can both pass their conditions and both apply, which real DynamoDB never
allows (transactions on the same items are serialized). SQS requests stay concurrent, so long
polls do not hold up everything else.
"""
import sys
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

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
