"""The store stage: the only place that holds state. The journal (SQLite or PostgreSQL behind one interface)
keeps sources, the outbox of owed deliveries with their states, dead letters and rejections (``_journal``, on
a database that ``_database`` opens, versions and guards); a run writes to it through
:class:`~._outbox.Outbox` alone, and shares it with other workers under leases (``_leases``)."""
