"""The station service: configuration and line profiles (``config``), the state
directory (``store``), one worker per product line (``worker``), verdict logging
(``sink``), metrics, the service itself (``service``), and the commands
`musc-edge serve` (``cli``), `musc-edge demo` (``demo``), `musc-edge control` (``ctl``)."""
