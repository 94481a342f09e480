from archlab.cli.commands import main

main()
