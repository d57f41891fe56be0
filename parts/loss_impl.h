/* loss_impl: in progress */
