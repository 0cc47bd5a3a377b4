from heylook.cli import main

main()
