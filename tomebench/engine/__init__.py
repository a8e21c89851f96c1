"""The engine: a typed run spec in (`spec`), configurations planned and decided once (`plan`, `setup`), each
probed and timed interleaved (`probe`, `throughput`), evaluated in one data pass (`accuracy`), turned into rows
(`rows`), group by group, here or on a Ray cluster (`run`, `ray`)."""
