"""What a run writes: the row type and its CSV contract (`row`), the CSV on disk (`csv`), a configuration's
identity and label (`identity`), the journal a sweep writes as it goes (`journal`) and the checks and lock on
every output file (`files`)."""
