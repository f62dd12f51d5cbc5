import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])
