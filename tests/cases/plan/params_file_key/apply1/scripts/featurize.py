import shutil, sys; shutil.copyfile(sys.argv[2], sys.argv[3])
