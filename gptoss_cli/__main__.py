from gptoss_cli.cli import main

main()
