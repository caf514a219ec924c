from ttsd.cli import main

main()
