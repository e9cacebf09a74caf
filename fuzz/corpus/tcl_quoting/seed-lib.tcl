##AlfredToDo 3.0
Job -title {[IOM]ABC_0010 publish} -comment {mirror of iom graph ABC_0010_lib_v001-bb7bcca3} -metadata {{"graph_id":"ABC_0010_lib_v001-bb7bcca3","seq_type":"lib","shot":"ABC_0010","version":1}} -projects demo -tags {iom publish} -priority 100.0 -service lib -envkey {} -serialsubtasks 0 -subtasks {
  Task rm -id ABC_0010_lib_v001-bb7bcca3.cleanup -cmds {
    RemoteCmd {iom-bridge await --graph ABC_0010_lib_v001-bb7bcca3 --task ABC_0010_lib_v001-bb7bcca3.cleanup} -service iom_proxy
  } -subtasks {
    Task {sg version} -id ABC_0010_lib_v001-bb7bcca3.register -cmds {
      RemoteCmd {iom-bridge await --graph ABC_0010_lib_v001-bb7bcca3 --task ABC_0010_lib_v001-bb7bcca3.register} -service iom_proxy
    } -subtasks {
      Task {copy lib} -id ABC_0010_lib_v001-bb7bcca3.copy -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_lib_v001-bb7bcca3 --task ABC_0010_lib_v001-bb7bcca3.copy} -service iom_proxy
      } -subtasks {
        Task probe -id ABC_0010_lib_v001-bb7bcca3.probe -cmds {
          RemoteCmd {iom-bridge await --graph ABC_0010_lib_v001-bb7bcca3 --task ABC_0010_lib_v001-bb7bcca3.probe} -service iom_proxy
        }
      }
      Task thumbnail -id ABC_0010_lib_v001-bb7bcca3.thumbnail -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_lib_v001-bb7bcca3 --task ABC_0010_lib_v001-bb7bcca3.thumbnail} -service iom_proxy
      } -subtasks {
        Instance ABC_0010_lib_v001-bb7bcca3.copy
      }
      Task {render jpg} -id ABC_0010_lib_v001-bb7bcca3.proxy -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_lib_v001-bb7bcca3 --task ABC_0010_lib_v001-bb7bcca3.proxy} -service iom_proxy
      } -subtasks {
        Instance ABC_0010_lib_v001-bb7bcca3.copy
      }
      Task {render mp4} -id ABC_0010_lib_v001-bb7bcca3.review -cmds {
        RemoteCmd {iom-bridge await --graph ABC_0010_lib_v001-bb7bcca3 --task ABC_0010_lib_v001-bb7bcca3.review} -service iom_proxy
      } -subtasks {
        Instance ABC_0010_lib_v001-bb7bcca3.copy
      }
    }
  }
}
