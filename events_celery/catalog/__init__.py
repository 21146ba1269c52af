"""The event catalog: every event, its payload, and the services that send and receive it.

One set of data (:func:`build_catalog`) renders as an AsyncAPI 3.0 document
(:func:`asyncapi_document`, ``manage.py event_catalog``) and as a reStructuredText table
(:func:`catalog_table`) for the documentation.
"""

from events_celery.catalog.asyncapi import AVRO_SCHEMA_FORMAT, asyncapi_document
from events_celery.catalog.model import (
    CatalogEntry,
    Consumer,
    Field,
    Producer,
    ServiceRouting,
    build_catalog,
    payload_fields,
)
from events_celery.catalog.table import catalog_table

__all__ = [
    "AVRO_SCHEMA_FORMAT",
    "CatalogEntry",
    "Consumer",
    "Field",
    "Producer",
    "ServiceRouting",
    "asyncapi_document",
    "build_catalog",
    "catalog_table",
    "payload_fields",
]
