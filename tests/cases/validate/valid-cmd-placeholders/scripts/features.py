print('features')
