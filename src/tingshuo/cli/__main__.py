from tingshuo.cli import main

main()
