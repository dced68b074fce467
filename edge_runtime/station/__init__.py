"""The station service: configuration and line profiles (``config``), admission of
parts (``intake``), one worker per product line (``worker``), verdicts built, logged
and published (``verdicts``), the state directory (``store``), metrics, the service
itself (``service``), and the commands `musc-edge serve` (``cli``), `musc-edge demo`
(``demo``), `musc-edge control` (``ctl``)."""
