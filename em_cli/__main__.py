from em_cli.cli import main

main()
