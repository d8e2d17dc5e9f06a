"""`faceptor-edge bench`: the driver (`run`), one row per process (`rows`), the peer
specialists (`peers`), the machine (`hardware`) and the report (`report`)."""
