from texseg.cli import main

main()
