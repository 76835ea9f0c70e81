from hetmap import main

main()
