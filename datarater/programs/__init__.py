"""The programs: one module per subcommand, each a ``run(program_config)`` that owns the run
directory's files, the messages to the user and the process-0 checks; the library below never prints."""
