##AlfredToDo 3.0
Job -title {[IOM]ABC_0010 publish} -comment {mirror of iom graph ABC_0010_ref_v001-2097a191} -metadata {{"graph_id":"ABC_0010_ref_v001-2097a191","seq_type":"ref","shot":"ABC_0010","version":1}} -projects demo -tags {iom publish} -priority 100.0 -service Linux64 -envkey {} -serialsubtasks 0 -subtasks {
  Task rm -id ABC_0010_ref_v001-2097a191.cleanup -cmds {
    RemoteCmd {iom-bridge await --graph ABC_0010_ref_v001-2097a191 --task ABC_0010_ref_v001-2097a191.cleanup} -service iom_proxy
  } -subtasks {
    Task {sg version} -id ABC_0010_ref_v001-2097a191.register -cmds {
      RemoteCmd {iom-bridge await --graph ABC_0010_ref_v001-2097a191 --task ABC_0010_ref_v001-2097a191.register} -service iom_proxy
    } -subtasks {
      Task {copy ref} -id ABC_0010_ref_v001-2097a191.copy -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_ref_v001-2097a191 --task ABC_0010_ref_v001-2097a191.copy} -service iom_proxy
      } -subtasks {
        Task probe -id ABC_0010_ref_v001-2097a191.probe -cmds {
          RemoteCmd {iom-bridge await --graph ABC_0010_ref_v001-2097a191 --task ABC_0010_ref_v001-2097a191.probe} -service iom_proxy
        }
      }
      Task thumbnail -id ABC_0010_ref_v001-2097a191.thumbnail -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_ref_v001-2097a191 --task ABC_0010_ref_v001-2097a191.thumbnail} -service iom_proxy
      } -subtasks {
        Instance ABC_0010_ref_v001-2097a191.copy
      }
      Task {render jpg} -id ABC_0010_ref_v001-2097a191.proxy -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_ref_v001-2097a191 --task ABC_0010_ref_v001-2097a191.proxy} -service iom_proxy
      } -subtasks {
        Instance ABC_0010_ref_v001-2097a191.copy
      }
      Task {render mp4} -id ABC_0010_ref_v001-2097a191.review -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_ref_v001-2097a191 --task ABC_0010_ref_v001-2097a191.review} -service iom_proxy
      } -subtasks {
        Instance ABC_0010_ref_v001-2097a191.copy
      }
    }
  }
}
