from olly.cli import main

main()
