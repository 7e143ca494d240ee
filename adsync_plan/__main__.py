from adsync_plan.cli import main

main()
