from hetmap.cli import main

main()
