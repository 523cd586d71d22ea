"""driftwire's Avro data contracts (.avsc) and the serde that reads and writes them.

Importing this package never imports the detection engine or a Kafka client.
"""

from driftwire.schemas.errors import DecodeError, EncodeError, SerdeError
from driftwire.schemas.serde import (
    FORMATS,
    AvroSchema,
    Codec,
    as_schema,
    load_schema,
    parse_schema_text,
    schema_names,
)

__all__ = [
    "FORMATS",
    "AvroSchema",
    "Codec",
    "DecodeError",
    "EncodeError",
    "SerdeError",
    "as_schema",
    "load_schema",
    "parse_schema_text",
    "schema_names",
]
