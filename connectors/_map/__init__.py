"""The map stage: an inbound event into the deliveries it owes (routing, ``shipmap.engine``, validation,
encoding, delivery and idempotency keys). Pure but for the journal reads a caller hands it; writes nothing."""
