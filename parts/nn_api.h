/* nn_api: in progress */
